fn main() {
    println!("concur-sandbox: under construction");
}
