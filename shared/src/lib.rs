//! Shared library of the TripLink connector.
