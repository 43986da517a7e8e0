//! rpm package database parser (stub).
