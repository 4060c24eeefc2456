"""Generator pipelines (issue 7): training data from Concord Scenes (data.py), and evaluation
(judges, reports) built on it."""
