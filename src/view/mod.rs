//! `campeer view`: the project's own viewer client.
