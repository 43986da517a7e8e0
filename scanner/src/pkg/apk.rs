//! apk package database parser (stub).
