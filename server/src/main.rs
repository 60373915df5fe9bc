fn main() {
    println!("usher server: coming soon");
}
