"""Scoring: answers to the test split, metrics with intervals, the judge, benchmark suites, the
leaderboard, feedback sets."""
