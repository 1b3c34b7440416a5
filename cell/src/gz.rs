//! The global zone: data that cannot be split by user (an item's total flash-sale
//! stock), hosted by one designated cell. Cells lease stock from it in chunks and
//! give back what they do not sell.

pub mod client;
pub mod keeper;
pub mod recalls;
pub mod server;
pub mod wire;
