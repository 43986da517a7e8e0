//! dpkg package database parser (stub).
