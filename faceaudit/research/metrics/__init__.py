"""Face recognition metrics, pure numpy (no I/O, no models): one module per family.

``pairs``: LFW pairs files; ``verification``: 1:1; ``identification``: 1:N and the impostor
false-match rate; ``clustering``: identity clustering against the true identities.
Similarities are cosine similarities of L2-normalised embeddings, in [-1, 1].
"""
