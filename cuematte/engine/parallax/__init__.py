"""The parallax cue: two views of a portrait with a small camera move (the parallax-matting paper).

Near and far layers move differently between the views. The flow between them, filled separately from the
certain person and the certain background, aligns the second view once on the background and once on the
person; a two-branch network compares them and refines the reference view's guidance in its unknown band.
"""
