"""Recipes that reproduce the models this project ships, one command each."""
