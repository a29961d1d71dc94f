# Installing and packaging: what `cmake --install` puts under a prefix besides the targets' own
# install() rules (daemon and cachectl in bin/, libcachesvc_client.so in lib/, its header in
# include/cachesvc/, the Python packages in ${CACHESVC_INSTALL_PYTHONDIR}), and the Debian package
# `cpack -G DEB` builds from the same rules (docs/operations.md, "Installing").
#
#   <prefix>/lib/systemd/system/cachesvc.service   deploy/cachesvc.service, ExecStart naming the
#                                                  installed daemon and configuration
#   /etc/cachesvc/cachesvc.toml                    deploy/cachesvc.toml, when the prefix is /usr
#   <prefix>/etc/cachesvc/cachesvc.toml            ... under any other prefix
#   <prefix>/share/doc/cachesvc/                   the operator's documents
#
# The unit and the configuration's place are decided at install time, from the prefix the
# install really uses (`cmake --install --prefix`, or /usr inside cpack), so one build serves a
# temporary prefix, /usr/local and the package alike.

install(FILES
  ${PROJECT_SOURCE_DIR}/README.md
  ${PROJECT_SOURCE_DIR}/docs/operations.md
  ${PROJECT_SOURCE_DIR}/docs/configuration.md
  ${PROJECT_SOURCE_DIR}/docs/cachectl.md
  ${PROJECT_SOURCE_DIR}/docs/connector.md
  ${PROJECT_SOURCE_DIR}/docs/sessions.md
  DESTINATION ${CMAKE_INSTALL_DOCDIR})

install(CODE "
  set(prefix \"\${CMAKE_INSTALL_PREFIX}\")
  if(prefix STREQUAL \"/usr\")
    set(etc \"/etc\")
  else()
    set(etc \"\${prefix}/etc\")
  endif()
  set(bindir \"\${prefix}/${CMAKE_INSTALL_BINDIR}\")
  set(config \"\${etc}/cachesvc/cachesvc.toml\")
  # The configuration: an operator's edited copy is never overwritten.
  if(NOT EXISTS \"\$ENV{DESTDIR}\${config}\")
    # file(INSTALL) adds DESTDIR itself (cpack stages with DESTDIR and the prefix /usr).
    file(INSTALL \"${PROJECT_SOURCE_DIR}/deploy/cachesvc.toml\"
         DESTINATION \"\${etc}/cachesvc\")
  endif()
  # The unit, naming the daemon and the configuration where they were installed.
  file(READ \"${PROJECT_SOURCE_DIR}/deploy/cachesvc.service\" unit)
  string(REPLACE \"/usr/local/bin/cachesvc\" \"\${bindir}/cachesvc\" unit \"\${unit}\")
  string(REPLACE \"/etc/cachesvc/cachesvc.toml\" \"\${config}\" unit \"\${unit}\")
  string(REPLACE \"/usr/share/doc/cachesvc/\" \"\${prefix}/${CMAKE_INSTALL_DATADIR}/doc/cachesvc/\"
         unit \"\${unit}\")
  file(WRITE \"\$ENV{DESTDIR}\${prefix}/lib/systemd/system/cachesvc.service\" \"\${unit}\")
  message(STATUS \"Installing: \$ENV{DESTDIR}\${prefix}/lib/systemd/system/cachesvc.service\")
")

# --- Debian package: cpack -G DEB in a release build folder -------------------------------------
set(CPACK_PACKAGE_NAME cachesvc)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "cachesvc developers <cachesvc@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "agent-aware KV-cache service for LLM inference (daemon, cachectl, engine connector)")
set(CPACK_PACKAGE_DESCRIPTION
    "cachesvc keeps LLM KV cache alive across AI agents' tool calls, tiers it across GPU, host\n"
    "memory and NVMe, and serves prefix blocks to inference engines. This package holds the\n"
    "daemon and its systemd unit, the cachectl CLI, libcachesvc_client.so with its C header and\n"
    "the Python engine connector and session client.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
# Library dependencies from the binaries themselves (dpkg-shlibdeps); the Python packages' own.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "python3, python3-grpcio, python3-protobuf")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "python3-torch")
# postinst makes the service user, prerm stops the service; the configuration is a conffile.
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/deploy/debian/postinst
    ${PROJECT_SOURCE_DIR}/deploy/debian/prerm
    ${PROJECT_SOURCE_DIR}/deploy/debian/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
