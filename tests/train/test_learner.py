"""The run's fastai Learner (fastseg.train.learner): encoder and decoder as two parameter groups, and
the model's facts carried into the export by a top-level, picklable callback."""

import pickle

from fastseg.model import build_model
from fastseg.train.learner import FastsegInfo, seg_splitter


def test_splitter_puts_the_encoder_first_and_every_parameter_in_one_group():
    model, _ = build_model("timm-efficientnet-b0", 3, "none")
    encoder, rest = seg_splitter(model)
    assert [id(p) for p in encoder] == [id(p) for p in model.encoder.parameters()]
    assert len(encoder) + len(rest) == len(list(model.parameters()))
    assert not {id(p) for p in encoder} & {id(p) for p in rest}


def test_fastseg_info_pickles_with_its_meta():
    back = pickle.loads(pickle.dumps(FastsegInfo({"codes": ["bg", "cell"], "size": 64})))
    assert type(back) is FastsegInfo and back.meta == {"codes": ["bg", "cell"], "size": 64}
