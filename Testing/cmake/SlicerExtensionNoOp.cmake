# Stand-in for Slicer_EXTENSION_GENERATE_CONFIG and Slicer_EXTENSION_CPACK: the extension's config file and
# its package (.tar.gz of the install tree) are not needed to test what the install tree holds.
