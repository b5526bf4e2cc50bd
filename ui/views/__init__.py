"""The pages of the app (search, track, library) and what they share."""
