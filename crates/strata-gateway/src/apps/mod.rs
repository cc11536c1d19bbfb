//! The built-in apps a route can serve with `app = "NAME"`.
