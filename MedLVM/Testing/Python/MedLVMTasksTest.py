"""In-app test of denoising and super-resolution through the MedLVM logic and the engine (baseline methods, so it
takes seconds): a volume is super-resolved into a new volume, each item of a sequence is denoised into a new sequence.

Run by ctest (`slicer_add_python_unittest`) or from the Python console:
    import slicer.testing; slicer.testing.runUnitTest([path_to_this_folder], "MedLVMTasksTest")
"""

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest


class MedLVMTasksTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_VolumeTasks()

    def test_VolumeTasks(self):
        self.delayDisplay("MedLVM: super-resolution of a volume, denoising of each item of a sequence")
        from MedLVM import MedLVMTest
        from MedLVMLib.slicer import mrml

        selfTest = MedLVMTest()
        logic = selfTest._logic()
        inputSequence, geometry = selfTest._makeInput(nPhases=2)
        volume = mrml.new_volume_node(slicer.mrmlScene, mrml.volume_array(inputSequence.GetNthDataNode(0)), geometry,
                                      "MedLVM test CT")
        try:
            thin = logic.process(volume, task="superres", factor=2, method="linear")
            denoised = logic.process(inputSequence, task="denoise", method="tv")
        finally:
            logic.shutdownEngine()
        self.assertEqual(thin.volume.GetName(), "MedLVM test CT x2")
        self.assertEqual(mrml.volume_array(thin.volume).shape, (32, 24, 24))
        self.assertEqual(denoised.sequence.GetName(), "MedLVM test 4D CT denoised")
        self.assertEqual(denoised.sequence.GetNumberOfDataNodes(), 2)
        self.assertTrue(denoised.browser.IsSynchronizedSequenceNode(inputSequence, False))
        self.delayDisplay("MedLVM tasks test passed")
