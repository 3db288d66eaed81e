"""cetl: Coupled End-to-end Transfer Learning and the methods it is measured against.

Chen, Zhang, Dong, "Coupled End-to-End Transfer Learning with Generalized Fisher
Information", CVPR 2018. See ``docs/`` for the method as implemented and the design.
"""

__version__ = "0.1.0"
