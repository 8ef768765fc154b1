//! Local stand-ins for what AWS does around the functions, for `make demo`.

pub mod stream;
