"""Identity clustering of an index's faces: a k-NN graph, merged by guarded agglomeration.

``cluster``: the entry points and their result; ``graph``: the k-NN graph above a threshold;
``agglomeration``: the guarded merging; ``threshold``: the threshold for an index's size;
``identities_file``: the file ``faceaudit cluster`` writes beside an index.
"""
