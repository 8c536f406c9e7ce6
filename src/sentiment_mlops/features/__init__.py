"""Entity features: who writes a text and whom it addresses, as of the moment it is written.

- `events.py`: labelled events with their time, author and addressed account (the airline
  tweets' `with-context.csv`), one per id; the time-ordered split. pandas only.
- `aggregates.py`: the windowed aggregates the feature views serve, computed from events so
  that a row stamped T holds only events at or before T. pandas only.
- `repository.py`: the Feast feature repository (entities `user` and `account`, the feature
  views and the feature service), its config generated from `Settings` under `var/`, the
  point-in-time historical retrieval, materialisation and online lookup. The only module
  that imports feast (the `features` extra).
- `training.py`: labelled rows joined with their entity features for `sentiment train
  --features`.
"""
