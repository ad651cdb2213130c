//! `BollardDriver` against a fake Engine API (wiremock): the requests it
//! makes and how it reads the answers.

mod connect;
mod fake;
mod images;
mod push;
mod resolve;
mod tagging;
mod transfer;
