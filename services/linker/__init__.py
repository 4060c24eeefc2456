"""The linker service (DESIGN.md section 1, protos/concord/v1/linker.proto): knowledge bases of
multimodal entities in Qdrant, mention linking (ANN candidates + the M3EL re-rank) and
knowledge-graph alignment (UMAEA).

app.py (build: settings -> ServiceDefinition) · servicer.py (proto <-> domain) · convert.py
(validation naming fields, results -> protos) · servable.py (the model: embed entities, link
mentions through batchers, align graphs) · loading.py (the linker package) · kb.py (a KB = a
`kb-<name>` collection) · jobs.py (align jobs on disk) · worker.py (entity events, align jobs)
· types.py (domain values).
"""
