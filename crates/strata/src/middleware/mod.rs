//! The production middlewares, one file each: config struct, constructor, `handle`, tests.
