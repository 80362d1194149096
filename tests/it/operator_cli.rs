//! The operator CLI (SPEC §8) against a real server: each command as a subprocess.
