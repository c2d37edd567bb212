"""The ``signal`` group of experiments (``vgjax reproduce --group signal``): mean-field theory
beside measurement. Its studies, derived numbers, figures and report sections."""
