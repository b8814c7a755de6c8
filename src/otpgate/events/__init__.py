"""Delivering the store's queued events to the app's webhook."""
