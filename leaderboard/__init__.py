"""The static leaderboard: built from the results database only (never imports torch or runs models)."""
