"""CoOp's linear probe (lpclip/linear_probe.py) on fixed features, recorded as a golden (make_goldens.py starts it).

Fixed features (4 classes; 16 training and 4 validation images per class; 40 test images; 16 dimensions, class
means apart but overlapping, so that the regularisation matters) are written where linear_probe.py reads them
(``clip_feat/<dataset>/{train,val,test}.npz``); the released script then runs unmodified (``--num_run 1
--num_step 8``) for all its shot counts. scikit-learn's LogisticRegression is wrapped, without changing what it
computes, to record each shot count's few-shot training and validation features (the first fit's, the first
predict's) and the final classifier's test predictions; the chosen C is the one its report file names.
"""
from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

CLASSES, TRAIN, VAL, TEST, DIM = 4, 16, 4, 40, 16
SHOTS = (1, 2, 4, 8, 16)


def fixed_features(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 1.0, (CLASSES, DIM))
    splits = {}
    for split, per_class in (("train", TRAIN), ("val", VAL), ("test", TEST // CLASSES)):
        labels = np.repeat(np.arange(CLASSES), per_class)
        splits[split] = ((means[labels] + rng.normal(0, 1.5, (len(labels), DIM))).astype(np.float32), labels)
    return splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repo", type=Path, required=True, help="the KaiyangZhou/CoOp checkout")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    from sklearn.linear_model import LogisticRegression

    splits = fixed_features()
    folder = args.work / "clip_feat" / "Fixed"
    folder.mkdir(parents=True, exist_ok=True)
    for split, (features, labels) in splits.items():
        np.savez(folder / split, feature_list=features, label_list=labels)
    calls: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    fit, predict = LogisticRegression.fit, LogisticRegression.predict

    def recording_fit(self, X, y, *a, **kw):
        calls.append(("fit", np.array(X), np.array(y), self.C))
        return fit(self, X, y, *a, **kw)

    def recording_predict(self, X):
        out = predict(self, X)
        calls.append(("predict", np.array(X), np.array(out), self.C))
        return out

    LogisticRegression.fit, LogisticRegression.predict = recording_fit, recording_predict
    os.chdir(args.work)
    sys.argv = ["linear_probe.py", "--dataset", "Fixed", "--feature_dir", "clip_feat", "--num_step", "8",
                "--num_run", "1"]
    runpy.run_path(str(args.repo / "lpclip" / "linear_probe.py"), run_name="__main__")
    details = (args.work / "report" / "clip_feat_s8r1_details.txt").read_text().splitlines()
    test_x = splits["test"][0]
    val_x, val_y = splits["val"]
    tensors, chosen = {}, {}
    per_shot = len(calls) // len(SHOTS)  # each shot count makes the same number of calls
    for k, shot in enumerate(SHOTS):
        own = calls[k * per_shot:(k + 1) * per_shot]
        train_fit = next(c for c in own if c[0] == "fit")
        val_pred = next(c for c in own if c[0] == "predict")
        rows = [int(np.flatnonzero((val_x == row).all(axis=1))[0]) for row in val_pred[1]]
        final_test = [c for c in own if c[0] == "predict" and c[1].shape == test_x.shape][-1]
        line = [d for d in details if f", {shot} shot," in d][-1]
        chosen[shot] = float(line.split("weight ")[1].split(",")[0])
        assert final_test[3] == chosen[shot], (final_test[3], chosen[shot])
        tensors |= {f"{shot}.train_x": torch.from_numpy(train_fit[1]), f"{shot}.train_y": torch.from_numpy(train_fit[2]),
                    f"{shot}.val_x": torch.from_numpy(val_pred[1]), f"{shot}.val_y": torch.from_numpy(val_y[rows]),
                    f"{shot}.test_pred": torch.from_numpy(final_test[2])}
    tensors |= {"test_x": torch.from_numpy(test_x), "test_y": torch.from_numpy(splits["test"][1])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(args.out),
              metadata={"chosen_c": json.dumps(chosen), "search_steps": "8",
                        "source": "KaiyangZhou/CoOp lpclip/linear_probe.py --num_run 1 --num_step 8"})
    print(f"  linear probe: chosen C per shot {chosen}")


if __name__ == "__main__":
    main()
