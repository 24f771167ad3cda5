"""Contracts for people: JSON Schema per message, the AsyncAPI document, compatibility."""
