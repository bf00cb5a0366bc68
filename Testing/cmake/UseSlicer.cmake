# Stand-in for Slicer's UseSlicer.cmake: check the extension name, switch testing on, define the macros that a
# scripted-module extension calls.

if(NOT DEFINED EXTENSION_NAME)
  set(EXTENSION_NAME ${PROJECT_NAME})
endif()
if("${EXTENSION_NAME}" MATCHES "^$|^Slicer$|^Project$")
  message(FATAL_ERROR "Call 'project(<extension_name>)' before 'include(\${Slicer_USE_FILE})'")
endif()

include(CTest)  # as UseSlicer.cmake does for an extension: BUILD_TESTING, ON by default

include(${CMAKE_CURRENT_LIST_DIR}/ctkMacroCompilePythonScript.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/SlicerMacroPythonTesting.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/SlicerMacroBuildScriptedModule.cmake)
