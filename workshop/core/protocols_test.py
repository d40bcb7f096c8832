"""Tests of the capability protocols: `isinstance` answers what a model can do."""

from absl.testing import absltest

from workshop.core import protocols


class _TokenModel:
    def check_inputs(self, x) -> None:
        if max(x) >= 4:
            raise ValueError(f"token id {max(x)} is outside the vocabulary of 4")


class _Sampler:
    def sampling_options(self, *, labels=None, batch, sampler=None, steps=None, guidance_scale=None):
        return labels, sampler, steps, guidance_scale


class _Vae:
    def elbo(self, x, *, rngs=None):
        return x

    def log_prob_and_elbo(self, x, *, rngs=None):
        return x, x


class _ElboOnly:
    def elbo(self, x, *, rngs=None):
        return x


class _Upsampler:
    model_type = "upsampler"

    def __init__(self):
        self.low_res_shape = (8, 8, 1)

    def check_low_res(self, low_res, batch=None):
        return low_res

    def downsample(self, x):
        return x[:, ::2, ::2]


class _LowResShapeOnly:  # an attribute of the same name is not the capability
    low_res_shape = (8, 8, 1)


class CapabilityProtocolsTest(absltest.TestCase):

    def test_each_capability_is_recognised_only_where_present(self):
        models = {"token": _TokenModel(), "sampler": _Sampler(), "upsampler": _Upsampler(), "shape_only": _LowResShapeOnly(), "vae": _Vae(),
                  "elbo_only": _ElboOnly(), "plain": object()}
        want = {
            protocols.InputChecks: {"token"},
            protocols.SamplingOptions: {"sampler"},
            protocols.SuperResolutionModel: {"upsampler"},
            protocols.ElboModel: {"vae", "elbo_only"},
            protocols.JointElboModel: {"vae"},
        }
        for proto, names in want.items():
            got = {name for name, m in models.items() if isinstance(m, proto)}
            self.assertEqual(got, names, proto.__name__)

    def test_input_checks_raise_through_the_protocol(self):
        model = _TokenModel()
        self.assertIsInstance(model, protocols.InputChecks)
        model.check_inputs([0, 3])
        with self.assertRaisesRegex(ValueError, "token id 7"):
            model.check_inputs([0, 7])


if __name__ == "__main__":
    absltest.main()
