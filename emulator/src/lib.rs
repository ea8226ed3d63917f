//! A faithful emulator of Gameye's Session API.
