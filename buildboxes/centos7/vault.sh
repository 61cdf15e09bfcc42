#!/bin/sh
# Point every yum repository at vault.centos.org (mirror.centos.org was retired at end of life).
set -eu
sed -i -e 's|^mirrorlist=|#mirrorlist=|' \
       -e 's|^#\?baseurl=http://mirror.centos.org|baseurl=http://vault.centos.org|' \
       /etc/yum.repos.d/*.repo
