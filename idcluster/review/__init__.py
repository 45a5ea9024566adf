"""`idcluster review`: fix identities in a local web page; every later run remembers.

Review is a view plus a journal: the decisions journal (review_decisions.jsonl,
idcluster.evidence.decisions: core, the next `cluster` reads it as constraints) and
views of its replay. By job:

- store: one output folder's review state (journal epoch, replay) and applying an action;
- actions: an action from the page checked against the state, as a journal entry;
- ranking: member confidence and merge suggestions from the run's face vectors;
- materialise: the identity folders, face crops and identity_clustering.json of the
  state (through idcluster.export.report);
- thumbs: face thumbnails cached by content hash; server: the Starlette app; static/: the page.
"""
