"""oyez: publish an organisation's scheduled posts on time and keep an honest record."""
