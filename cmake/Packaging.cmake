# A .deb of tunneld: `cpack -G DEB` in the build directory (after building). The package
# installs under /usr, plus /etc/tunneld/tunneld.toml.example; its maintainer scripts create the
# user, the directories, and tell a running systemd about the unit.
set(CPACK_GENERATOR "DEB")
set(CPACK_PACKAGE_NAME "tunneld")
set(CPACK_PACKAGE_VENDOR "tunneld maintainers")
set(CPACK_PACKAGE_CONTACT "tunneld maintainers <maintainers@tunneld.invalid>")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${CPACK_PACKAGE_CONTACT}")
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Moves TCP services between networks one at a time, through SSH tunnels")
set(CPACK_PACKAGE_DESCRIPTION
    "tunneld runs on legacy hosts and sends each service's clients to its old backend, or to its\n"
    "new one through a pool of SSH sessions, switching with a lag gate and rolling back with one\n"
    "command. tunnelctl operates it; health and Prometheus metrics are served over HTTP.")
set(CPACK_DEBIAN_PACKAGE_SECTION "net")
set(CPACK_DEBIAN_PACKAGE_PRIORITY "optional")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_PACKAGING_INSTALL_PREFIX "/usr")
set(CPACK_INSTALL_PREFIX "/usr") # the prefix used with CPACK_SET_DESTDIR
# The example config goes to an absolute /etc path: DESTDIR staging keeps it inside the package.
set(CPACK_SET_DESTDIR ON)
set(CPACK_STRIP_FILES ON)

find_program(TUNNELD_DPKG_SHLIBDEPS dpkg-shlibdeps)
if(TUNNELD_DPKG_SHLIBDEPS)
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
endif()
# systemd-sysusers and systemd-tmpfiles are called by postinst when present; a host without
# systemd still gets a usable binary, so systemd is only recommended.
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "systemd")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "openssh-client, prometheus")

set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    "${PROJECT_SOURCE_DIR}/cmake/debian/postinst;${PROJECT_SOURCE_DIR}/cmake/debian/prerm;${PROJECT_SOURCE_DIR}/cmake/debian/postrm;${PROJECT_SOURCE_DIR}/cmake/debian/conffiles")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)

include(CPack)
