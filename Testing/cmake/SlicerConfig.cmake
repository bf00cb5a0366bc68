# A stand-in for the SlicerConfig.cmake of a Slicer build, for testing how the MedLVM extension is built and
# installed where no Slicer build tree is at hand (CI, a developer's laptop):
#
#   cmake -S <repo> -B <build> -DSlicer_DIR=<repo>/Testing/cmake -DCMAKE_INSTALL_PREFIX=<prefix>
#   cmake --build <build> && cmake --install <build>
#
# It defines what the extension's CMake files use: the folder variables of Slicer's CMake/SlicerDirectories.cmake
# and CMake/UseSlicer.cmake.in (Linux values: no macOS bundle location), Slicer_USE_FILE (the macros), and no-op
# files for Slicer_EXTENSION_GENERATE_CONFIG and Slicer_EXTENSION_CPACK. The macros reproduce where the real
# ones put files in the build tree and the install tree; they neither package nor run Slicer.

set(Slicer_FOUND TRUE)
set(Slicer_STANDIN TRUE)

# The Slicer version to lay out the folders for (lib/Slicer-<major>.<minor>/qt-scripted-modules).
if(NOT DEFINED Slicer_STANDIN_VERSION)
  set(Slicer_STANDIN_VERSION "5.10")
endif()
string(REPLACE "." ";" _standin_version "${Slicer_STANDIN_VERSION}")
list(GET _standin_version 0 Slicer_VERSION_MAJOR)
list(GET _standin_version 1 Slicer_VERSION_MINOR)
set(Slicer_VERSION "${Slicer_VERSION_MAJOR}.${Slicer_VERSION_MINOR}")

set(Slicer_USE_PYTHONQT ON)
set(Slicer_MAIN_PROJECT_APPLICATION_NAME Slicer)
# The launcher ctest would run; there is none here, so the registered tests can be listed (ctest -N), not run.
set(Slicer_LAUNCHER_EXECUTABLE "${CMAKE_CURRENT_LIST_DIR}/Slicer-not-available")

# Build-tree folders (relative to CMAKE_BINARY_DIR), as in SlicerDirectories.cmake.
set(Slicer_LIB_DIR "lib/${Slicer_MAIN_PROJECT_APPLICATION_NAME}-${Slicer_VERSION}")
set(Slicer_QTSCRIPTEDMODULES_SUBDIR "qt-scripted-modules")
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR "${Slicer_LIB_DIR}/${Slicer_QTSCRIPTEDMODULES_SUBDIR}")
set(Slicer_CLIMODULES_LIB_DIR "${Slicer_LIB_DIR}/cli-modules")
set(Slicer_QTLOADABLEMODULES_LIB_DIR "${Slicer_LIB_DIR}/qt-loadable-modules")

# Install-tree folders (relative to CMAKE_INSTALL_PREFIX), as UseSlicer.cmake sets them for an extension.
set(Slicer_INSTALL_ROOT "./")
set(Slicer_BUNDLE_EXTENSIONS_LOCATION "")
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR
  "${Slicer_INSTALL_ROOT}${Slicer_BUNDLE_EXTENSIONS_LOCATION}${Slicer_QTSCRIPTEDMODULES_LIB_DIR}")

set(Slicer_USE_FILE "${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake")
set(Slicer_EXTENSION_GENERATE_CONFIG "${CMAKE_CURRENT_LIST_DIR}/SlicerExtensionNoOp.cmake")
set(Slicer_EXTENSION_CPACK "${CMAKE_CURRENT_LIST_DIR}/SlicerExtensionNoOp.cmake")
