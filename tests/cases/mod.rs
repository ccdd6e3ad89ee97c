mod cli;
mod connections;
mod failures;
mod headers;
mod limits;
mod metrics;
mod routing;
mod streaming;
