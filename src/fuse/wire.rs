//! The FUSE kernel protocol as bytes: the ABI structs, parsing a request read from
//! /dev/fuse and encoding the answer written back. Pure code, no I/O.
#![allow(dead_code)] // The session layer that uses it is under construction.

pub mod abi;
pub mod reply;
pub mod request;
