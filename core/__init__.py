"""The bottom layer: configuration, the event model and the segment-file format.

Imported by every other package (ingress, actors, sinks, bench, sluice) and importing
none of them, nor anything heavy (no Ray, no pyarrow).
"""
