"""In-app tests of the MedLVM logic's engine handling: asynchronous run, cancel, restart after a crash.

Run by ctest (`slicer_add_python_unittest`) or from the Python console:
    import slicer.testing; slicer.testing.runUnitTest([path_to_this_folder], "MedLVMEngineTest")
"""

import os
import time

import qt
import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest


class MedLVMEngineTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_AsynchronousCancel()
        self.setUp()
        self.test_CrashIsReportedAndRestarts()

    def _logicAndInput(self):
        from MedLVM import MedLVMLogic, MedLVMTest
        from MedLVMLib.slicer import protocol

        logic = MedLVMLogic()
        logic.engineEnvironment = {protocol.TEST_HOOKS_ENV: "1"}
        inputSequence, _ = MedLVMTest()._makeInput()
        return logic, inputSequence

    def _waitFor(self, predicate, timeoutS=120.0):
        deadline = time.monotonic() + timeoutS
        while not predicate() and time.monotonic() < deadline:
            slicer.app.processEvents(qt.QEventLoop.AllEvents, 50)
        self.assertTrue(predicate(), "timed out")

    def test_AsynchronousCancel(self):
        self.delayDisplay("MedLVM: cancel a running job")
        logic, inputSequence = self._logicAndInput()
        logic.buildArgv = lambda request, inputPath, outPath, *rest: ["_selftest", "--steps", "1000", "--delay", "0.05"]
        finished = []
        logic.process(inputSequence, observedPhases=3, blocking=False, onFinished=lambda o, e: finished.append(e))
        jobDir = logic._job["dir"]
        self._waitFor(lambda: logic.engine().alive)
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        logic.cancel()
        self.assertEqual(finished, ["Cancelled."])
        self.assertFalse(os.path.exists(jobDir))
        self.assertFalse(logic.engine().alive)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)
        logic.shutdownEngine()

    def test_CrashIsReportedAndRestarts(self):
        self.delayDisplay("MedLVM: a crashed engine is reported, the next job restarts it")
        logic, inputSequence = self._logicAndInput()
        logic.buildArgv = lambda request, inputPath, outPath, *rest: ["_selftest", "--steps", "1000", "--delay", "0.05"]
        finished = []
        logic.process(inputSequence, observedPhases=3, blocking=False, onFinished=lambda o, e: finished.append(e))
        self._waitFor(lambda: logic.engine().alive)
        logic.engine().send_command("_exit", code=9)
        self._waitFor(lambda: bool(finished))
        self.assertIn("stopped unexpectedly", finished[0])
        logic.buildArgv = lambda request, inputPath, outPath, *rest: [
            "_selftest", "--steps", "2", "--copy", str(inputPath), str(outPath)]
        outputs = logic.process(inputSequence, observedPhases=3)
        self.assertEqual(outputs.sequence.GetNumberOfDataNodes(), inputSequence.GetNumberOfDataNodes())
        logic.shutdownEngine()
        self.delayDisplay("MedLVMEngineTest passed")
