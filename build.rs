// sqlx::migrate!() embeds the files under migrations/sqlite and migrations/postgres at compile time; tell cargo to rebuild
// when any of them changes, otherwise a new migration would silently be left out.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
