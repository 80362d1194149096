//! The web console (SPEC §7) in a real headless Chromium.
