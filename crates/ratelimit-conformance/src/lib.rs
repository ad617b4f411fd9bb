#![doc = include_str!("../README.md")]

pub mod differential;
pub mod invariants;
pub mod ops;
pub mod scenarios;
pub mod sets;
pub mod strategy;
mod violation;

pub use violation::Violation;
