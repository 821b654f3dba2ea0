"""HuBERT-style pretraining targets: upstream features -> k-means -> labels per encoder frame.

``build_targets(spec, data_dir, out_dir, k=...)`` writes a :class:`TargetSet`; the trainer
opens it with ``TargetSet.open(path)`` and takes a batch's labels with
:meth:`TargetSet.batch`. ``speechssl targets`` is the command-line front end.
"""

from speechssl.targets.alignment import FrameGrid, align_labels, conv_geometry, loaded_num_samples, upstream_layout
from speechssl.targets.build import DEFAULT_K, DEFAULT_MAX_FIT_FRAMES, build_targets, format_summary
from speechssl.targets.kmeans import FrameReservoir, KMeansModel, fit_kmeans
from speechssl.targets.store import IGNORE_INDEX, TargetSet, TargetSetError

__all__ = [
    "DEFAULT_K",
    "DEFAULT_MAX_FIT_FRAMES",
    "FrameGrid",
    "FrameReservoir",
    "IGNORE_INDEX",
    "KMeansModel",
    "TargetSet",
    "TargetSetError",
    "align_labels",
    "build_targets",
    "conv_geometry",
    "fit_kmeans",
    "format_summary",
    "loaded_num_samples",
    "upstream_layout",
]
