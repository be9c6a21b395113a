"""Example applications that run the service over schemas of their own."""
