"""`idcluster review`: fix identities in a local web page; every later run remembers.

- decisions: the append-only journal (review_decisions.jsonl) and its replay into a
  review state and into constraints for the next `idcluster cluster`.
- store: applies an action to the journal, identity folders and identity_clustering.json.
- thumbs: face thumbnails cached by content hash; server: the Starlette app; static/: the page.
"""
