"""The GPU's and its JPEG engines' use while DALI runs, for the GPU check's ``dali`` step."""

import statistics
import subprocess
import threading
import time

import torch


class NvmlSampler:
    """GPU and JPEG-engine utilisation sampled at 10 Hz while DALI runs: NVML on a thread of this process, or
    nvidia-smi at 100 ms where no NVML binding (pynvml) is installed."""

    QUERY = ["nvidia-smi", "--query-gpu=utilization.gpu,utilization.jpeg", "--format=csv,noheader,nounits",
             "-lms", "100"]

    def __init__(self, hz: float = 10.0) -> None:
        self.period, self.samples, self._stop = 1.0 / hz, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._smi: subprocess.Popen | None = None
        self.source = "nvml"

    def start(self) -> None:
        try:
            import pynvml  # noqa: F401
        except ImportError:
            self.source = "nvidia-smi"
            try:
                self._smi = subprocess.Popen(self.QUERY, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                             text=True)
            except OSError as exc:  # neither: img/s at load 0 vs 1 still tells the engines' share
                self.source = f"nothing ({exc})"
            return
        self._thread.start()

    def _run(self) -> None:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        while not self._stop.is_set():
            sample = {"sm": pynvml.nvmlDeviceGetUtilizationRates(handle).gpu}
            try:
                sample["jpeg"] = pynvml.nvmlDeviceGetJpgUtilization(handle)[0]
            except Exception:
                sample["jpeg"] = None
            self.samples.append(sample)
            time.sleep(self.period)

    def stop(self) -> dict:
        if self.source.startswith("nothing"):
            pass
        elif self._smi is not None:
            self._smi.terminate()
            output, _ = self._smi.communicate(timeout=5)
            for line in output.splitlines():
                fields = [field.strip() for field in line.split(",")]
                if len(fields) == 2 and fields[0].isdigit():
                    self.samples.append({"sm": int(fields[0]),
                                         "jpeg": int(fields[1]) if fields[1].isdigit() else None})
        else:
            self._stop.set()
            self._thread.join(timeout=2)
        if not self.samples:
            return {"utilisation": f"no samples from {self.source}"}
        jpeg = [s["jpeg"] for s in self.samples if s["jpeg"] is not None]
        return {"utilisation_source": self.source, "samples": len(self.samples),
                "sm_util_mean": statistics.mean(s["sm"] for s in self.samples),
                "jpeg_util_mean": statistics.mean(jpeg) if jpeg else None}
