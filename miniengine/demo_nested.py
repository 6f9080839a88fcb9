# mypy: disable-error-code="no-untyped-def, no-untyped-call"
"""The seed's scenario 2, verbatim except for the imports: a WorkChain nesting itself N levels.

It lives in its own importable module because daemon workers import a submitted class by its
module path (a class defined in ``__main__`` cannot be submitted).
"""

# The seed's own import line and code, kept verbatim (not reformatted).
# fmt: off
from miniengine import WorkChain, ToContext, append_, submit, Int  # noqa: F401, I001


class NestedWorkChain(WorkChain):
    """
    Nested workchain which creates a workflow where the nesting level is equal to its input.
    """

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input('inp', valid_type=Int)
        spec.outline(cls.do_submit, cls.finalize)
        spec.output('output', valid_type=Int, required=True)

    def do_submit(self):
        if self.should_submit():
            self.report('Submitting nested workchain.')
            return ToContext(workchain=append_(self.submit(NestedWorkChain, inp=self.inputs.inp - 1)))  # noqa: E501

    def should_submit(self):
        return int(self.inputs.inp) > 0

    def finalize(self):
        """Attach the outputs."""
        if self.should_submit():
            self.report('Getting sub-workchain output.')
            sub_workchain = self.ctx.workchain[0]
            self.out('output', Int(sub_workchain.outputs.output + 1).store())
        else:
            self.report('Bottom-level workchain reached.')
            self.out('output', Int(0).store())
# fmt: on
