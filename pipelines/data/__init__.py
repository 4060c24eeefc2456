"""Concord Scenes and the derived datasets (DESIGN.md section 7).

`scene` samples structured scenes, `render` turns them into pixels and layouts,
`captions` / `misalign` write the text, `sets/` builds each named dataset, `cli` exposes it.
"""
