"""The published leaderboard: leaderboard.md (markdown.py), the static site (site.py, session_page.py, templates/)
and its figures (figures.py)."""
