//! The embedded Redis: a private `redis-server` started from PATH in the state dir.
