"""PandaSet -> nuScenes-format converter (`bev-reid convert-pandaset`); see docs/pandaset.md.

Modules: :mod:`.read` (PandaSet's files), :mod:`.conventions` (every convention changed, once),
:mod:`.geometry` (poses, extrinsics, points in boxes), :mod:`.cuboids` (overlap duplicates and
instances), :mod:`.tables` (one function per nuScenes table), :mod:`.convert` (the conversion).
"""
